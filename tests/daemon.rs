//! `polypush run` as a service, end to end against a real nginx-rtmp: a schedule window that
//! opens a few seconds after start and lasts about 10 s (publishing starts and stops on time,
//! seen at the ingest; idle before and after), and SIGHUP reloads (a valid media change is
//! applied without interrupting the broadcast, an invalid file is refused, a schedule change
//! that leaves no window stops it).

mod common;

use common::nginx::{decode_errors, ffprobe_json, Nginx, NginxOptions};
use common::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// A running `polypush run` whose stderr is collected on a thread.
struct Daemon {
    child: Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    fn start(cfg: &Path, args: &[&str]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_polypush"))
            .arg("--config")
            .arg(cfg)
            .args(["--log-level", "info", "--json", "run"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Daemon {
            child,
            log,
            reader: Some(reader),
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (bounded) until the log contains `needle`.
    fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's PID.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// Waits for the exit (bounded; killed by PID past it); the summary JSON and the log.
    fn finish(mut self, limit: Duration) -> (bool, serde_json::Value, String) {
        let until = Instant::now() + limit;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break Some(st);
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        let summary = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
        (status.is_some_and(|s| s.success()), summary, self.log())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `HH:MM:SS` in UTC of `t`, and its date.
fn utc(t: SystemTime) -> (String, String) {
    let z = jiff::Timestamp::try_from(t)
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC);
    (
        z.strftime("%H:%M:%S").to_string(),
        z.strftime("%Y-%m-%d").to_string(),
    )
}

/// Polls `file` until it exists (the ingest opened the recording at publish) and then until
/// it stops growing for `quiet`; returns (appeared, last growth) relative to `t0`.
fn watch_recording(
    file: &Path,
    t0: Instant,
    limit: Duration,
    quiet: Duration,
) -> (Option<f64>, Option<f64>) {
    let until = t0 + limit;
    let mut appeared = None;
    let mut last_growth = None;
    let mut size = 0u64;
    while Instant::now() < until {
        if let Ok(m) = std::fs::metadata(file) {
            let now = t0.elapsed().as_secs_f64();
            appeared.get_or_insert(now);
            if m.len() != size {
                size = m.len();
                last_growth = Some(now);
            } else if last_growth.is_some_and(|g| now - g > quiet.as_secs_f64()) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (appeared, last_growth)
}

#[test]
fn a_window_opens_and_closes_on_time() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let stream = "sched";
    // The window: from the whole second 5-6 s after now, for 10 s, in UTC (one-off).
    let t0 = Instant::now();
    let now = SystemTime::now();
    let since_epoch = now.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let opens = SystemTime::UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs() + 6);
    let opens_at = opens.duration_since(now).unwrap().as_secs_f64();
    let (start, date) = utc(opens);
    let (end, end_date) = utc(opens + Duration::from_secs(10));
    if date != end_date {
        eprintln!("SKIPPED a_window_opens_and_closes_on_time: the window would cross midnight UTC; run again");
        return;
    }
    let extra = format!(
        "[[schedule]]\ndate = \"{date}\"\nstart = \"{start}\"\nend = \"{end}\"\ntimezone = \"UTC\"\ntitle = \"test window\"\n"
    );
    let cfg = write_run_config(dir.path(), None, &extra);
    let url = nginx.url(stream);
    let d = Daemon::start(&cfg, &["--url", &url, "--duration", "22"]);
    let rec = nginx.recording(stream);
    let (appeared, stopped) =
        watch_recording(&rec, t0, Duration::from_secs(30), Duration::from_secs(2));
    let (ok, summary, log) = d.finish(Duration::from_secs(20));
    eprintln!(
        "window {opens_at:.2}..{:.2} s; recording appeared at {appeared:?} s, last grew at {stopped:?} s",
        opens_at + 10.0
    );
    assert!(ok, "polypush failed:\n{log}");
    assert!(log.contains("idle until the next window"), "{log}");
    let appeared = appeared.expect("nothing was published");
    let stopped = stopped.unwrap();
    // Publishing starts on time (the window opens at 5 s, plus the pipeline's start and the
    // RTMP handshake), and not before: idle means no connection.
    assert!(
        (opens_at - 0.2..=opens_at + 2.0).contains(&appeared),
        "publishing started at {appeared} s, the window at {opens_at:.2} s"
    );
    // And stops at the end, not at --duration (22 s).
    let closes_at = opens_at + 10.0;
    assert!(
        (closes_at - 1.0..=closes_at + 2.0).contains(&stopped),
        "publishing stopped at {stopped} s, the window at {closes_at:.2} s"
    );
    let probe = ffprobe_json(&rec);
    let dur: f64 = probe["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (8.5..=11.5).contains(&dur),
        "recorded {dur} s of a 10 s window"
    );
    assert!(decode_errors(&rec).is_empty());
    assert_eq!(summary["broadcasts"], 1, "{summary}");
    assert!(
        log.contains("window closed: stopping the broadcast"),
        "{log}"
    );
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
    std::thread::sleep(Duration::from_secs(2));

    // A valid media change: the bitrate. Applied inside the running broadcast.
    rewrite(&cfg, "bitrate_kbps = 800", "bitrate_kbps = 500");
    d.signal(libc::SIGHUP);
    assert!(
        d.wait_for_log("capture and encoding restarted", Duration::from_secs(10)),
        "{}",
        d.log()
    );
    std::thread::sleep(Duration::from_secs(2));

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
    let hup_at = Instant::now();
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
    let stopped_after = hup_at.elapsed();
    let (ok, _summary, log) = d.finish(Duration::from_secs(20));
    assert!(ok, "polypush failed:\n{log}");
    assert!(stopped_after < Duration::from_secs(5), "{stopped_after:?}");
    assert!(log.contains("idle"), "{log}");
}
