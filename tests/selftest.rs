//! `polypush selftest` end to end: the real binary against the Polyv simulator (`polyv-sim`)
//! and a real nginx-rtmp on loopback, for the all-pass run and each failure the issue names:
//! wrong password, ingest down, missing camera, clock skew (the simulator's clock-offset
//! fault), unwritable recording directory; plus a broken config. Every run checks that
//! nothing was published (no nginx recording, no `publish` in nginx's log) and that no
//! secret reached the output.

mod common;

use common::nginx::Nginx;
use common::*;
use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const CHECKS: [&str; 8] = [
    "config", "video", "audio", "encoder", "login", "ingest", "clock", "record",
];

const TEST_VIDEO: &str =
    "source = \"test\"\nwidth = 640\nheight = 360\nfps = 25\nbitrate_kbps = 800\npreset = \"ultrafast\"\n";

/// nginx-rtmp, and the simulator handing out push addresses on it.
struct Env {
    nginx: Nginx,
    sim: Sim,
    dir: tempfile::TempDir,
}

impl Env {
    fn start() -> Env {
        let nginx = Nginx::start();
        let base = format!("rtmp://127.0.0.1:{}/live/", nginx.port());
        Self::with_rtmp_base(nginx, &base)
    }

    fn with_rtmp_base(nginx: Nginx, rtmp_base: &str) -> Env {
        let sim = Sim::start_with(&["--rtmp-base", rtmp_base]);
        Env {
            nginx,
            sim,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A config on the simulator: `password`, `[video]` body, and more tables after.
    fn config(&self, password: &str, video: &str, extra: &str) -> PathBuf {
        let b = &self.sim.base;
        let path = self.dir.path().join("selftest.toml");
        let text = format!(
            "[polyv]\nchannel_id = \"{CHANNEL}\"\npassword = \"{password}\"\ntimeout_s = 5\n\
             [polyv.endpoints]\nlogin = \"{b}\"\nchannel = \"{b}\"\nchat = \"{b}\"\napi = \"{b}\"\n\
             [video]\n{video}[audio]\nsource = \"test\"\n{extra}\n"
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn stream(&self) -> String {
        self.sim.channel(CHANNEL)["stream"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Nothing was published: no recording, no `publish` in nginx's log.
    fn assert_nothing_published(&self) {
        let stream = self.stream();
        assert!(
            !self.nginx.recording(&stream).exists(),
            "selftest published: {} exists",
            self.nginx.recording(&stream).display()
        );
        assert_eq!(
            self.nginx.publish_count(&stream),
            0,
            "{}",
            self.nginx.error_log()
        );
        assert!(
            !self.nginx.error_log().contains("publish:"),
            "{}",
            self.nginx.error_log()
        );
    }
}

fn selftest(cfg: &Path, args: &[&str]) -> Run {
    let mut all = vec!["selftest"];
    all.extend_from_slice(args);
    polypush(cfg, &all)
}

fn selftest_json(cfg: &Path, args: &[&str]) -> (Run, Value) {
    let mut all = vec!["--json", "selftest"];
    all.extend_from_slice(args);
    let r = polypush(cfg, &all);
    let v = r.json();
    (r, v)
}

/// The `--json` shape: `{ok, exit_code, config, checks: [{name, ok, skipped, detail, fix}]}`
/// with the eight checks in order.
fn assert_shape(v: &Value) {
    assert!(v["ok"].is_boolean(), "{v}");
    assert!(v["exit_code"].is_u64(), "{v}");
    let checks = v["checks"].as_array().expect("checks array");
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, CHECKS, "{v}");
    for c in checks {
        assert!(c["ok"].is_boolean() && c["skipped"].is_boolean(), "{c}");
        assert!(c["detail"].is_string(), "{c}");
        assert!(c["fix"].is_null() || c["fix"].is_string(), "{c}");
        // A failure says what to do; a pass does not.
        let failed = c["ok"] == false && c["skipped"] == false;
        assert_eq!(failed, c["fix"].is_string(), "{c}");
    }
    assert_eq!(
        v["ok"].as_bool().unwrap(),
        checks.iter().all(|c| c["ok"] == true),
        "{v}"
    );
}

fn check<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {v}"))
}

fn assert_passed(v: &Value, names: &[&str]) {
    for n in names {
        let c = check(v, n);
        assert!(c["ok"] == true && c["skipped"] == false, "{n}: {c}");
    }
}

/// The human line of a check: `  ✓ name  detail`.
fn line<'a>(r: &'a Run, name: &str) -> &'a str {
    r.stdout
        .lines()
        .find(|l| {
            let t = l.trim_start();
            t.len() > 4 && t[t.char_indices().nth(2).unwrap().0..].starts_with(&format!("{name} "))
        })
        .unwrap_or_else(|| panic!("no line for {name}:\n{}", r.stdout))
}

fn no_secrets(r: &Run, secrets: &[&str]) {
    for s in secrets {
        assert!(!r.stdout.contains(s), "a secret in stdout:\n{}", r.stdout);
        assert!(!r.stderr.contains(s), "a secret in stderr");
    }
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

#[test]
fn all_checks_pass_against_the_simulator_and_nginx() {
    let env = Env::start();
    let rec = env.dir.path().join("recordings");
    let cfg = env.config(
        PASSWORD,
        TEST_VIDEO,
        &format!(
            "[record]\nenabled = true\ndir = \"{}\"\nmin_free_mb = 1\nsegment_s = 60\n",
            rec.display()
        ),
    );

    let r = selftest(&cfg, &[]);
    println!("{}", r.stdout);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for name in CHECKS {
        assert!(
            line(&r, name).trim_start().starts_with('✓'),
            "{name}:\n{}",
            r.stdout
        );
    }
    assert!(r.stdout.contains("all checks passed"), "{}", r.stdout);
    assert!(line(&r, "video").contains("fps"), "{}", r.stdout);
    assert!(line(&r, "encoder").contains("ms/frame"), "{}", r.stdout);
    assert!(line(&r, "ingest").contains("closed without publishing"));
    // The push address is shown, its key masked.
    let stream = env.stream();
    let masked = format!("/live/{}***", &stream[..4]);
    assert!(line(&r, "login").contains(&masked), "{}", r.stdout);
    no_secrets(&r, &[&stream, PASSWORD]);
    // The recording directory was created, and the probe file is gone.
    assert!(rec.is_dir());
    assert_eq!(std::fs::read_dir(&rec).unwrap().count(), 0);

    let (r, v) = selftest_json(&cfg, &[]);
    println!("{}", r.stdout);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_shape(&v);
    assert_eq!(v["ok"], true);
    assert_eq!(v["exit_code"], 0);
    assert_passed(&v, &CHECKS);
    let clock = check(&v, "clock")["detail"].as_str().unwrap().to_string();
    assert!(clock.contains("Polyv's"), "{clock}");
    no_secrets(&r, &[&stream, PASSWORD]);

    // nginx saw the connects and nothing else; Polyv saw logins, no notify_stream2.
    assert!(
        env.nginx
            .wait_for_log("connect: app='live'", Duration::from_secs(2)),
        "{}",
        env.nginx.error_log()
    );
    env.assert_nothing_published();
    let paths: Vec<String> = env
        .sim
        .requests()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert!(
        paths.iter().any(|p| p == "/api/v2/teacher_login.json"),
        "{paths:?}"
    );
    assert!(
        !paths.iter().any(|p| p.contains("notify_stream")),
        "{paths:?}"
    );

    // --url checks that ingest instead, without Polyv: login and clock are not needed.
    let url = env.nginx.url("urlcheck");
    let (r, v) = selftest_json(&cfg, &["--url", &url]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_shape(&v);
    for name in ["login", "clock"] {
        let c = check(&v, name);
        assert!(c["ok"] == true && c["skipped"] == true, "{c}");
    }
    assert_passed(
        &v,
        &["config", "video", "audio", "encoder", "ingest", "record"],
    );
    assert!(!env.nginx.recording("urlcheck").exists());
    assert_eq!(env.nginx.publish_count("urlcheck"), 0);
}

#[test]
fn wrong_password_fails_login_with_exit_3() {
    let env = Env::start();
    let cfg = env.config("not-the-password", TEST_VIDEO, "");

    let r = selftest(&cfg, &[]);
    println!("{}", r.stdout);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    let login = line(&r, "login");
    assert!(login.trim_start().starts_with('✗'), "{}", r.stdout);
    assert!(login.contains("password"), "{login}");
    assert!(
        r.stdout.contains(
            "→ fix: check polyv.channel_id and the channel password in polyv.password_file"
        ),
        "{}",
        r.stdout
    );
    assert!(
        line(&r, "ingest").contains("skipped: needs login"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("exit code 3"), "{}", r.stdout);
    // No second error line: the table says it all.
    assert!(!r.stderr.contains("polypush: error:"), "{}", r.stderr);

    let (r, v) = selftest_json(&cfg, &[]);
    println!("{}", r.stdout);
    assert_eq!(r.code, 3);
    assert_shape(&v);
    assert_eq!(v["ok"], false);
    assert_eq!(v["exit_code"], 3);
    let login = check(&v, "login");
    assert_eq!(login["ok"], false);
    assert_eq!(login["skipped"], false);
    assert!(
        login["fix"]
            .as_str()
            .unwrap()
            .contains("polyv.password_file"),
        "{login}"
    );
    let ingest = check(&v, "ingest");
    assert_eq!(
        (ingest["ok"].clone(), ingest["skipped"].clone()),
        (false.into(), true.into())
    );
    // Polyv answered, so its clock could still be compared.
    assert_passed(&v, &["config", "video", "audio", "encoder", "clock"]);
    no_secrets(&r, &["not-the-password"]);
    env.assert_nothing_published();
}

#[test]
fn ingest_down_fails_the_ingest_check_with_exit_4() {
    // Polyv hands out an address nothing listens on.
    let port = closed_port();
    let env = Env::with_rtmp_base(Nginx::start(), &format!("rtmp://127.0.0.1:{port}/live/"));
    let cfg = env.config(PASSWORD, TEST_VIDEO, "");
    let r = selftest(&cfg, &[]);
    println!("{}", r.stdout);
    assert_eq!(r.code, 4, "{}\n{}", r.stdout, r.stderr);
    let ingest = line(&r, "ingest");
    assert!(ingest.trim_start().starts_with('✗'), "{}", r.stdout);
    assert!(ingest.contains("refused"), "{ingest}");
    assert!(r
        .stdout
        .contains("→ fix: nothing accepts connections at 127.0.0.1:"));
    assert!(line(&r, "login").trim_start().starts_with('✓'));

    let (r, v) = selftest_json(&cfg, &[]);
    assert_eq!(r.code, 4);
    assert_shape(&v);
    assert_eq!(v["exit_code"], 4);
    assert_eq!(check(&v, "ingest")["ok"], false);
    assert_passed(
        &v,
        &["config", "video", "audio", "encoder", "login", "clock"],
    );
    no_secrets(&r, &[&env.stream(), PASSWORD]);

    // The same with --url: the ingest check alone fails.
    let url = format!("rtmp://127.0.0.1:{port}/live/somekey");
    let (r, v) = selftest_json(&cfg, &["--url", &url]);
    assert_eq!(r.code, 4, "{}", r.stdout);
    assert_shape(&v);
    assert_eq!(check(&v, "ingest")["ok"], false);
    assert!(!r.stdout.contains("somekey"), "{}", r.stdout);
}

#[test]
fn missing_camera_fails_the_video_check_with_exit_5() {
    assert!(
        !Path::new("/dev/video99").exists(),
        "/dev/video99 exists here"
    );
    let env = Env::start();
    let cfg = env.config(
        PASSWORD,
        "source = \"v4l2\"\ndevice = \"/dev/video99\"\nwidth = 640\nheight = 360\nfps = 25\nbitrate_kbps = 800\npreset = \"ultrafast\"\n",
        "",
    );
    let r = selftest(&cfg, &[]);
    println!("{}", r.stdout);
    assert_eq!(r.code, 5, "{}\n{}", r.stdout, r.stderr);
    let video = line(&r, "video");
    assert!(video.trim_start().starts_with('✗'), "{}", r.stdout);
    assert!(video.contains("/dev/video99"), "{video}");
    assert!(r.stdout.contains("`polypush devices`"), "{}", r.stdout);

    let (r, v) = selftest_json(&cfg, &[]);
    assert_eq!(r.code, 5);
    assert_shape(&v);
    assert_eq!(v["exit_code"], 5);
    let video = check(&v, "video");
    assert_eq!(video["ok"], false);
    assert!(
        video["fix"].as_str().unwrap().contains("polypush devices"),
        "{video}"
    );
    // The rest does not depend on the camera.
    assert_passed(
        &v,
        &["config", "audio", "encoder", "login", "ingest", "clock"],
    );
    env.assert_nothing_published();
}

#[test]
fn clock_skew_fails_the_clock_check() {
    let env = Env::start();
    // The simulator's clock (and its Date header) 10 minutes ahead of this box.
    env.sim.faults(r#"{"clock_offset_ms":600000}"#);
    let cfg = env.config(PASSWORD, TEST_VIDEO, "");
    let r = selftest(&cfg, &[]);
    println!("{}", r.stdout);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    let clock = line(&r, "clock");
    assert!(clock.trim_start().starts_with('✗'), "{}", r.stdout);
    assert!(r
        .stdout
        .contains("→ fix: enable NTP: timedatectl set-ntp true"));

    let (r, v) = selftest_json(&cfg, &[]);
    println!("{}", r.stdout);
    assert_eq!(r.code, 3);
    assert_shape(&v);
    let clock = check(&v, "clock");
    assert_eq!(clock["ok"], false);
    assert!(
        clock["fix"]
            .as_str()
            .unwrap()
            .starts_with("enable NTP: timedatectl set-ntp true"),
        "{clock}"
    );
    // "this box's clock is 600.0 s behind Polyv's ..."
    let detail = clock["detail"].as_str().unwrap();
    let secs: f64 = detail
        .split("clock is ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no offset in {detail}"));
    assert!((secs - 600.0).abs() < 3.0, "{detail}");
    assert!(detail.contains("behind"), "{detail}");
    // Polyv refuses the login's timestamp too, and says why.
    let login = check(&v, "login");
    assert_eq!(login["ok"], false);
    assert!(login["fix"]
        .as_str()
        .unwrap()
        .contains("timedatectl set-ntp true"));
    env.assert_nothing_published();
}

#[test]
fn unwritable_recording_directory_fails_the_record_check() {
    let env = Env::start();
    let ro = env.dir.path().join("readonly");
    std::fs::create_dir(&ro).unwrap();
    let cfg = env.config(
        PASSWORD,
        TEST_VIDEO,
        &format!(
            "[record]\nenabled = true\ndir = \"{}\"\nmin_free_mb = 1\n",
            ro.display()
        ),
    );
    let Some(r) = selftest_read_only(&cfg, &ro) else {
        return;
    };
    println!("{}", r.stdout);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let v = r.json();
    assert_shape(&v);
    let record = check(&v, "record");
    assert_eq!(record["ok"], false);
    assert!(
        record["detail"].as_str().unwrap().contains("not writable"),
        "{record}"
    );
    assert!(
        record["fix"].as_str().unwrap().contains("record.dir"),
        "{record}"
    );
    assert_passed(
        &v,
        &[
            "config", "video", "audio", "encoder", "login", "ingest", "clock",
        ],
    );
    assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0);
}

/// `polypush --json selftest` with `dir` read-only. Root ignores mode bits, so as root `dir`
/// is bind-mounted read-only in a private mount namespace of the run (`unshare -m`); otherwise
/// it is chmod 555. `None` (the test is skipped) when neither can be arranged.
fn selftest_read_only(cfg: &Path, dir: &Path) -> Option<Run> {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let bin = env!("CARGO_BIN_EXE_polypush");
    let mut cmd = if root {
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg("mount --bind \"$1\" \"$1\" && mount -o remount,bind,ro \"$1\" && shift && exec \"$@\"")
            .arg("sh")
            .arg(dir)
            .arg(bin);
        c
    } else {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        Command::new(bin)
    };
    let out = cmd
        .arg("--config")
        .arg(cfg)
        .args(["--json", "selftest"])
        .env("RUST_LOG", "debug")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            eprintln!("unwritable_recording_directory: SKIPPED: cannot run unshare: {e}");
            return None;
        }
    };
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if !r.stdout.trim_start().starts_with('{') {
        eprintln!(
            "unwritable_recording_directory: SKIPPED: no read-only directory could be arranged: {}",
            r.stderr.trim()
        );
        return None;
    }
    Some(r)
}

#[test]
fn a_broken_config_fails_first_and_skips_the_rest() {
    let env = Env::start();
    let cfg = env.config(
        PASSWORD,
        "source = \"test\"\nwidth = 641\nheight = 360\n",
        "",
    );
    let (r, v) = selftest_json(&cfg, &[]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert_shape(&v);
    let config = check(&v, "config");
    assert_eq!(config["ok"], false);
    assert!(
        config["detail"].as_str().unwrap().contains("video.width"),
        "{config}"
    );
    for name in &CHECKS[1..] {
        let c = check(&v, name);
        assert_eq!(c["skipped"], true, "{c}");
        assert_eq!(c["detail"], "skipped: needs config", "{c}");
    }
    assert!(env.sim.requests().is_empty());
}

#[test]
fn an_unknown_application_fails_the_ingest_check_at_connect() {
    let env = Env::start();
    let cfg = env.config(PASSWORD, TEST_VIDEO, "");
    // nginx-rtmp hangs up on `connect` to an application it does not have.
    let url = env.nginx.url_in("nosuchapp", "somekey");
    let (r, v) = selftest_json(&cfg, &["--url", &url]);
    println!("{}", r.stdout);
    assert_eq!(r.code, 4, "{}\n{}", r.stdout, r.stderr);
    assert_shape(&v);
    let ingest = check(&v, "ingest");
    assert_eq!(ingest["ok"], false);
    assert!(
        ingest["detail"]
            .as_str()
            .unwrap()
            .contains("while connecting to the RTMP application"),
        "{ingest}"
    );
    assert!(
        ingest["fix"].as_str().unwrap().contains("\"nosuchapp\""),
        "{ingest}"
    );
    assert!(!r.stdout.contains("somekey"), "{}", r.stdout);
    assert!(!env.nginx.error_log().contains("publish:"));
}
