//! The status page in a real browser: Debian's headless Chromium, driven by its chromedriver
//! over plain HTTP (WebDriver), loads the page from a running `polypush run` that streams to
//! a real nginx-rtmp with a status token set. Once with a Chinese browser (`--accept-lang`),
//! once with an English one: sent to the login form, a wrong token refused, the right one
//! typed in; then the rendered DOM: the state, the schedule, the audio levels changing between
//! two reads, the snapshot loaded at 640 px, the five alarms, the reconnect button's
//! confirmation and result; a screenshot of each (and of the Chinese page on a phone-sized
//! window) is kept under the target directory, its path printed. The daemon's log never holds
//! the token.
//!
//! The source is a looped file, not the test pattern: `sine` has one fixed level, and the
//! meter must be seen moving, so the file's tone swells and fades (0.5 Hz).
//!
//! Chromium and chromedriver come from scripts/install-deps.sh (`chromium chromium-driver
//! fonts-wqy-microhei`); every browser runs with a fresh profile, in its own process group
//! that is killed by its id when the test ends, and every wait is bounded.

mod common;

use common::daemon::Daemon;
use common::nginx::Nginx;
use common::*;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "e5b1d7c3a9f24680-page-token";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where screenshots go: `$CARGO_TARGET_DIR` when set, else the target's tmp dir.
fn shot_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
}

/// 8 s of 640x360 testsrc2 with a stereo 440/660 Hz tone whose level swells and fades.
fn make_clip(path: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=640x360:rate=25")
        .args(["-f", "lavfi", "-i"])
        .arg(
            "aevalsrc=0.25*sin(2*PI*440*t)*(0.55+0.45*sin(2*PI*0.5*t))|\
             0.18*sin(2*PI*660*t)*(0.55+0.45*cos(2*PI*0.5*t)):s=48000",
        )
        .args([
            "-t",
            "8",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
        ])
        .args([
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-shortest",
        ])
        .arg(path)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One WebDriver request. chromedriver keeps the connection open whatever the request says,
/// so the answer is read by its `Content-Length`.
fn wd_http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to chromedriver");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let (head_end, length) = loop {
        let n = s.read(&mut chunk).expect("read from chromedriver");
        assert!(n > 0, "chromedriver closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (i + 4, length);
        }
    };
    while buf.len() < head_end + length {
        let n = s.read(&mut chunk).expect("read from chromedriver");
        assert!(n > 0, "chromedriver closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    (
        code,
        String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string(),
    )
}

/// chromedriver in its own process group; the group (it and the browsers it started) is
/// killed by its id on drop.
struct Driver {
    child: Child,
    addr: String,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/install-deps.sh installs it)");
        // Owned first, so a failed start is killed too.
        let driver = Driver {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        let ready = poll_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(&driver.addr).is_ok()
                && wd_http(&driver.addr, "GET", "/status", "").0 == 200
        });
        assert!(ready, "chromedriver did not start on {}", driver.addr);
        driver
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let body = if method == "GET" || method == "DELETE" {
            String::new()
        } else {
            body.to_string()
        };
        let (code, text) = wd_http(&self.addr, method, path, &body);
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(
            code == 200,
            "WebDriver {method} {path} {body}: {code} {text}"
        );
        v["value"].clone()
    }

    /// A fresh browser: headless, its own empty profile, the given `Accept-Language`.
    fn session(&self, accept_lang: &str, profile: &Path) -> Session<'_> {
        let binary = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("chromium (scripts/install-deps.sh installs it)");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--hide-scrollbars", "--window-size=1280,1100",
                    format!("--accept-lang={accept_lang}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let v = self.call("POST", "/session", caps);
        let id = v["sessionId"].as_str().expect("a session id").to_string();
        let s = Session { driver: self, id };
        s.call(
            "POST",
            "/timeouts",
            json!({"pageLoad": 20000, "script": 10000, "implicit": 0}),
        );
        s
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group our own child leads (its id is the group's).
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl Session<'_> {
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        self.driver
            .call(method, &format!("/session/{}{path}", self.id), body)
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    fn url(&self) -> String {
        self.call("GET", "/url", Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    /// Waits (bounded) until `script` returns something truthy; returns it.
    fn wait_js(&self, script: &str, within: Duration, what: &str) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.js(script);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; page:\n{}",
                self.js("return document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn element(&self, testid: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            json!({"using": "css selector", "value": format!("[data-testid=\"{testid}\"]")}),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .expect("an element id")
            .to_string()
    }

    fn click(&self, testid: &str) {
        let e = self.element(testid);
        self.call("POST", &format!("/element/{e}/click"), json!({}));
    }

    fn type_into(&self, testid: &str, text: &str) {
        let e = self.element(testid);
        self.call("POST", &format!("/element/{e}/clear"), json!({}));
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            json!({ "text": text }),
        );
    }

    fn text(&self, testid: &str) -> String {
        self.js(&format!(
            "return document.querySelector('[data-testid=\"{testid}\"]').textContent"
        ))
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.call("GET", "/screenshot", Value::Null);
        let png = base64_decode(b64.as_str().expect("base64 PNG"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = shot_dir().join(name);
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.id);
        if std::net::TcpStream::connect(&self.driver.addr).is_ok() {
            let _ = wd_http(&self.driver.addr, "DELETE", &path, "");
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// What each language must show.
struct Expect {
    accept_lang: &'static str,
    lang: &'static str,
    login_button: &'static str,
    live: &'static str,
    alarms_heading: &'static str,
    silence: &'static str,
    reconnect_sent: &'static str,
}

const ZH: Expect = Expect {
    accept_lang: "zh-CN",
    lang: "zh-CN",
    login_button: "登录",
    live: "直播中",
    alarms_heading: "音视频告警",
    silence: "静音",
    reconnect_sent: "正在使用新的推流地址重连。",
};

const EN: Expect = Expect {
    accept_lang: "en-US",
    lang: "en",
    login_button: "Log in",
    live: "Live",
    alarms_heading: "Media alarms",
    silence: "Silence",
    reconnect_sent: "Reconnecting now, with a fresh push address.",
};

/// The meter's (peak, rms) per channel as the page shows them.
fn levels(s: &Session) -> Vec<(String, String)> {
    let v = s.js(
        "return [...document.querySelectorAll('[data-testid^=\"meter-ch\"]')]\
         .map(r => [r.dataset.peak, r.dataset.rms])",
    );
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap_or_default().to_string(),
                        p[1].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One browser in one language, from the login form to the reconnect result.
fn visit(driver: &Driver, base: &str, e: &Expect, daemon: &Daemon, wrong_token_first: bool) {
    let profile = tempfile::tempdir().unwrap();
    let s = driver.session(e.accept_lang, profile.path());
    let langs = s.js("return navigator.languages");
    assert_eq!(langs[0], e.accept_lang, "the browser's languages: {langs}");

    // Not logged in: the page sends the browser to the form, in its language.
    s.go(&format!("{base}/"));
    assert!(s.url().ends_with("/login"), "{}", s.url());
    assert_eq!(s.js("return document.documentElement.lang"), e.lang);
    assert_eq!(s.text("login").trim(), e.login_button);

    if wrong_token_first {
        s.type_into("token", "not-the-token");
        s.click("login");
        s.wait_js(
            "return location.search.includes('failed=1') && \
             !document.querySelector('[data-testid=login-error]').hidden",
            Duration::from_secs(15),
            "the refusal shown",
        );
        assert!(
            daemon.wait_for_log("login refused", Duration::from_secs(5)),
            "{}",
            daemon.log()
        );
    }
    s.type_into("token", TOKEN);
    s.click("login");
    s.wait_js(
        "return location.pathname === '/' && document.documentElement.lang",
        Duration::from_secs(15),
        "the page after the login",
    );
    assert_eq!(s.js("return document.documentElement.lang"), e.lang);

    // The state, from /status.
    s.wait_js(
        "return document.querySelector('[data-testid=state]').dataset.state === 'live'",
        Duration::from_secs(15),
        "the state shown",
    );
    assert_eq!(s.text("state"), e.live);
    assert!(
        s.text("health").contains("ok: live"),
        "{}",
        s.text("health")
    );
    assert!(!s.text("window-now").is_empty());
    assert!(
        !s.text("target-bitrate").contains('–'),
        "{}",
        s.text("target-bitrate")
    );
    assert!(s.text("delivered-bitrate").contains("kbit/s"));
    assert!(s.text("queue-delay") != "–");
    assert!(!s.text("reconnects").is_empty());

    // The alarm list: five, fixed names kept, translated text.
    let alarms = s.js(
        "return [...document.querySelectorAll('[data-testid=alarms] li')]\
         .map(li => [li.dataset.alarm, li.querySelector('.name').textContent])",
    );
    let names: Vec<&str> = alarms
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a[0].as_str().unwrap())
        .collect();
    assert_eq!(names, ["silence", "clipping", "black", "frozen", "low_fps"]);
    assert_eq!(alarms[0][1], e.silence);
    assert!(s
        .js("return document.body.innerText")
        .as_str()
        .unwrap()
        .contains(e.alarms_heading));

    // The audio meter moves: two reads a second and a half apart differ.
    s.wait_js(
        "return document.querySelectorAll('[data-testid^=\"meter-ch\"]').length >= 1",
        Duration::from_secs(10),
        "the audio meter (GET /meter)",
    );
    let first = levels(&s);
    std::thread::sleep(Duration::from_millis(1500));
    let second = levels(&s);
    assert_eq!(first.len(), 2, "two channels: {first:?}");
    assert_ne!(first, second, "the meter did not move");
    for (peak, _) in &second {
        let db: f64 = peak.parse().unwrap();
        assert!((-60.0..=0.0).contains(&db), "peak {db} dBFS");
    }

    // The snapshot, at the configured width.
    let width = s.wait_js(
        "const i = document.querySelector('[data-testid=snapshot]'); \
         return !i.hidden && i.complete && i.naturalWidth",
        Duration::from_secs(15),
        "the snapshot (GET /snapshot.jpg)",
    );
    assert_eq!(width, 640, "the snapshot's width");

    // Let the meter and the picture settle, then keep a picture of the page.
    std::thread::sleep(Duration::from_millis(600));
    let shot = s.screenshot(&format!("status-page-{}.png", e.lang));
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);

    if e.lang == "zh-CN" {
        // On a phone: one column, nothing wider than the screen, fingers-sized buttons.
        s.call("POST", "/window/rect", json!({"width": 390, "height": 844}));
        s.wait_js(
            "return window.innerWidth <= 400",
            Duration::from_secs(5),
            "the phone-sized window",
        );
        let fits = s.js(
            "return document.documentElement.scrollWidth <= window.innerWidth && \
             document.querySelector('[data-testid=reconnect]').getBoundingClientRect().height >= 44 && \
             document.querySelector('[data-testid=lang-switch]').getBoundingClientRect().height >= 44",
        );
        assert_eq!(fits, true, "the page does not fit a phone");
        s.screenshot("status-page-zh-CN-phone.png");
        s.call(
            "POST",
            "/window/rect",
            json!({"width": 1280, "height": 1100}),
        );
    }

    // Reconnect now: asked to confirm, then the result shown.
    s.click("reconnect");
    assert_eq!(
        s.js("return document.querySelector('[data-testid=reconnect-confirm]').hidden"),
        false
    );
    s.click("reconnect-yes");
    let code = s.wait_js(
        "return document.querySelector('[data-testid=reconnect-result]').dataset.code",
        Duration::from_secs(10),
        "the reconnect result",
    );
    assert_eq!(code, "202", "{}", s.text("reconnect-result"));
    assert_eq!(s.text("reconnect-result"), e.reconnect_sent);
    s.screenshot(&format!("status-page-{}-reconnect.png", e.lang));

    // Extend 15 min: asked to confirm, then the service's answer shown (this daemon has no
    // schedule, so it is a refusal that says why).
    s.click("extend-15");
    s.click("control-yes");
    let code = s.wait_js(
        "return document.querySelector('[data-testid=control-result]').dataset.code",
        Duration::from_secs(10),
        "the extend result",
    );
    assert_eq!(code, "409", "{}", s.text("control-result"));
    assert!(
        s.text("control-result")
            .contains("no [[schedule]] is configured"),
        "{}",
        s.text("control-result")
    );
}

#[test]
fn the_page_in_a_real_browser_in_chinese_and_english() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("lesson.mp4");
    make_clip(&clip);
    let token_file = dir.path().join("status-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let status = format!("127.0.0.1:{}", free_port());
    let cfg = dir.path().join("polypush.toml");
    std::fs::write(
        &cfg,
        format!(
            "[polyv]\nchannel_id = \"{CHANNEL}\"\npassword = \"{PASSWORD}\"\n\
             [video]\nsource = \"file\"\nfile = {clip:?}\nwidth = 640\nheight = 360\nfps = 25\n\
             bitrate_kbps = 600\npreset = \"ultrafast\"\n[audio]\nsource = \"file\"\n\
             [status]\nlisten = \"{status}\"\ntoken_file = {token_file:?}\n"
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&cfg, &["--url", &nginx.url("page")]);
    assert!(
        daemon.wait_for_log("publishing", Duration::from_secs(20)),
        "{}",
        daemon.log()
    );

    let driver = Driver::start();
    let base = format!("http://{status}");
    let started = Instant::now();
    visit(&driver, &base, &ZH, &daemon, true);
    visit(&driver, &base, &EN, &daemon, false);
    eprintln!("both browsers took {:?}", started.elapsed());
    drop(driver);

    daemon.signal(libc::SIGTERM);
    let (ok, _, log) = daemon.finish(Duration::from_secs(20));
    assert!(ok, "{log}");
    assert!(log.contains("reconnect asked over HTTP"), "{log}");
    assert!(log.contains("status page: logged in"), "{log}");
    assert!(!log.contains(TOKEN), "the token is in the log");
}
